"""Content operations for a creator's week: brief, calendar, drafts, package, publish.

* ``content.brief`` reads the tenant's memory (brand voice, style guide, past
  scripts, what went out before) so drafts start from what the creator decided, with
  the version and author of each memory in the result.
* ``content.calendar`` and ``content.package`` are pure: the week's slots, and the
  posts (drafts plus one per clip) assembled for a single human review.
* ``llm.generate`` (``llm.py``) drafts the text in between.
* ``platform.publish`` posts to a publishing API that honours ``Idempotency-Key``
  (``services/platform.py`` is one), one key per post derived from the step's key, so
  a retry after a 5xx or a dead worker replays instead of posting twice.
"""

from __future__ import annotations

import dataclasses
from datetime import date
from typing import Any, Literal

from pydantic import Field, field_validator

from adapters.http import HttpRequestArgs
from adapters.http import request as http_request
from stead.contracts.base import Closed
from stead.egress import url_destination
from stead.egress.urls import absolute_http_url
from stead.operations.base import AdapterError, Operation, OperationContext
from stead_cases.llm import LLM_GENERATE

CHANNEL = r"^[a-z][a-z0-9_-]{0,31}$"


def http_url(value: str) -> str:
    """A base URL of a field case's service: checked, without its trailing slash."""
    return absolute_http_url(value, resolver="the worker resolves them").rstrip("/")


# ------------------------------------------------------------------ brief


class MemoryRef(Closed):
    namespace: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:/-]{0,127}$")
    key: str = Field(min_length=1, max_length=256)
    versions: int = Field(default=1, ge=1, le=10, description="Most recent versions to include.")
    required: bool = Field(default=True, description="Fail the step when it does not exist.")


class BriefArgs(Closed):
    memories: list[MemoryRef] = Field(min_length=1, max_length=20)


class BriefItem(Closed):
    namespace: str
    key: str
    version: int
    content: str
    written_by: str
    recorded_at: str
    reason: str = ""
    workflow_id: str | None = Field(default=None, description="The run that wrote it, if any.")
    step_id: str | None = None


class BriefResult(Closed):
    items: list[BriefItem]
    missing: list[str] = Field(default_factory=list, description="Optional memories not found.")


async def brief(ctx: OperationContext, args: BriefArgs) -> BriefResult:
    """The newest versions of each memory, oldest first within a key, shareable ones only."""
    items: list[BriefItem] = []
    missing: list[str] = []
    for ref in args.memories:
        versions = await _memory_versions(ctx, ref)
        if not versions:
            name = f"{ref.namespace}/{ref.key}"
            if ref.required:
                raise AdapterError(
                    f"memory {name} of tenant {ctx.tenant} does not exist (or may not be "
                    f"shared with a model); write it first, e.g. `stead memory put "
                    f"{ref.namespace} {ref.key} ... --tenant {ctx.tenant}`",
                    retryable=False,
                    details={"reason": "memory_missing", "memory": name},
                )
            missing.append(name)
        items.extend(versions[-ref.versions :])
    return BriefResult(items=items, missing=missing)


async def _memory_versions(ctx: OperationContext, ref: MemoryRef) -> list[BriefItem]:
    """Through ``adapters/memory.py``: the service's read gate, else Postgres, the truth,
    limited to public and internal content."""
    from adapters.memory import shareable_versions

    return [
        BriefItem(
            namespace=ref.namespace,
            key=ref.key,
            version=v.version,
            content=v.content or "",
            written_by=v.provenance.principal,
            recorded_at=v.recorded_at.isoformat(),
            reason=v.provenance.reason,
            workflow_id=v.provenance.workflow_id,
            step_id=v.provenance.step_id,
        )
        for v in await shareable_versions(ctx, ref.namespace, ref.key)
    ]


# --------------------------------------------------------------- calendar


class Clip(Closed):
    id: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
    title: str = Field(min_length=1, max_length=200)
    start: str = Field(pattern=r"^\d{1,2}:\d{2}(:\d{2})?$", description="Offset in the video.")
    end: str = Field(pattern=r"^\d{1,2}:\d{2}(:\d{2})?$")
    hook: str = Field(default="", max_length=500, description="One line that makes people watch.")


class CalendarArgs(Closed):
    week: str = Field(pattern=r"^\d{4}-W\d{2}$", description="ISO week, e.g. 2025-W23.")
    video_title: str = Field(min_length=1, max_length=200)
    channels: list[str] = Field(min_length=1, max_length=10)
    clips: list[Clip] = Field(default_factory=list, max_length=20)


class Slot(Closed):
    day: str
    channel: str
    kind: Literal["video", "post", "clip", "newsletter"]
    title: str


class CalendarResult(Closed):
    week: str
    slots: list[Slot]


def _week_days(week: str) -> list[str]:
    year, number = week.split("-W")
    try:
        return [date.fromisocalendar(int(year), int(number), d).isoformat() for d in range(1, 8)]
    except ValueError:
        raise AdapterError(
            f"{week} is not an ISO week", retryable=False, details={"reason": "bad_week"}
        ) from None


async def calendar(ctx: OperationContext, args: CalendarArgs) -> CalendarResult:
    """Video on Tuesday, posts the same day, one clip a day from Wednesday, newsletter Friday."""
    days = _week_days(args.week)
    slots = [Slot(day=days[1], channel="video", kind="video", title=args.video_title)]
    slots += [
        Slot(day=days[1], channel=c, kind="post", title=args.video_title) for c in args.channels
    ]
    for i, clip in enumerate(args.clips):
        slots.append(Slot(day=days[min(2 + i, 6)], channel="shorts", kind="clip", title=clip.title))
    slots.append(Slot(day=days[4], channel="newsletter", kind="newsletter", title=args.video_title))
    return CalendarResult(week=args.week, slots=slots)


# ----------------------------------------------------------------- package


class Draft(Closed):
    channel: str = Field(pattern=CHANNEL)
    title: str = Field(default="", max_length=200)
    text: str = Field(min_length=1, max_length=10_000)


class PackageArgs(Closed):
    week: str = Field(pattern=r"^\d{4}-W\d{2}$")
    drafts: list[Draft] = Field(min_length=1, max_length=10)
    clips: list[Clip] = Field(default_factory=list, max_length=20)
    clip_channel: str = Field(default="shorts", pattern=CHANNEL)
    hashtags: list[str] = Field(default_factory=list, max_length=10)


class Post(Closed):
    channel: str = Field(pattern=CHANNEL)
    title: str = Field(default="", max_length=200)
    text: str = Field(min_length=1, max_length=10_000)
    media: list[str] = Field(default_factory=list, max_length=10)


class PackageResult(Closed):
    posts: list[Post]
    summary: str = Field(description="The week's package as text, for review and memory.")


async def package(ctx: OperationContext, args: PackageArgs) -> PackageResult:
    """The drafts plus one post per clip: everything a reviewer approves at once."""
    tags = " ".join(f"#{t.lstrip('#')}" for t in args.hashtags)
    posts = [Post(channel=d.channel, title=d.title, text=d.text) for d in args.drafts]
    for clip in args.clips:
        text = f"{clip.hook or clip.title} ({clip.start}-{clip.end})"
        posts.append(
            Post(
                channel=args.clip_channel,
                title=clip.title,
                text=f"{text} {tags}".strip(),
                media=[clip.id],
            )
        )
    lines = [f"Content package for {args.week}:"]
    lines += [f"- [{p.channel}] {p.title}: {p.text}" for p in posts]
    return PackageResult(posts=posts, summary="\n".join(lines))


# ----------------------------------------------------------------- publish


class PublishArgs(Closed):
    base_url: str = Field(description="The publishing API, e.g. http://127.0.0.1:8601.")
    posts: list[Post] = Field(min_length=1, max_length=30)

    @field_validator("base_url")
    @classmethod
    def _base(cls, value: str) -> str:
        return http_url(value)


class Published(Closed):
    channel: str
    post_id: str
    url: str
    replayed: bool = Field(description="True when the platform had this post already.")


class PublishResult(Closed):
    posts: list[Published]


async def publish(ctx: OperationContext, args: PublishArgs) -> PublishResult:
    """One POST per post, each under its own key derived from the step's.

    A retry re-sends every post with the same keys: those that landed replay, the rest
    are created, so a failure halfway through never posts anything twice.
    """
    out: list[Published] = []
    for i, post in enumerate(args.posts):
        key = f"{ctx.idempotency_key}/{i}-{post.channel}"
        response = await http_request(
            dataclasses.replace(ctx, idempotency_key=key),
            HttpRequestArgs.model_validate(
                {
                    "method": "POST",
                    "url": f"{args.base_url}/v1/posts",
                    "json": post.model_dump(mode="json"),
                    "timeout_seconds": 20,
                }
            ),
        )
        body = response.json_body
        if not isinstance(body, dict) or not isinstance(body.get("id"), str):
            raise AdapterError(
                f"the platform at {args.base_url} answered {response.status} without a post id",
                retryable=False,
                details={"reason": "bad_answer", "status": response.status},
            )
        out.append(
            Published(
                channel=post.channel,
                post_id=body["id"],
                url=str(body.get("url", "")),
                replayed=response.headers.get("idempotent-replayed") == "true",
            )
        )
    return PublishResult(posts=out)


async def _resend(ctx: OperationContext, args: PublishArgs) -> PublishResult | None:
    """Re-sending with the same keys is the reconcile: the platform replays what landed."""
    return None


CONTENT_BRIEF: Operation[BriefArgs, BriefResult] = Operation(
    name="content.brief",
    description=(
        "Read the newest versions of the tenant's memories (brand voice, style guide, past "
        "scripts) to brief a draft; pii and secrets are never returned."
    ),
    args_model=BriefArgs,
    result_model=BriefResult,
    run=brief,
    side_effect="read",
    risk="low",
    idempotency="native",
    scopes=("memory:read",),
    timeout_seconds=30.0,
)

CONTENT_CALENDAR: Operation[CalendarArgs, CalendarResult] = Operation(
    name="content.calendar",
    description="Lay out a week's content calendar: video, posts per channel, clips, newsletter.",
    args_model=CalendarArgs,
    result_model=CalendarResult,
    run=calendar,
    side_effect="read",
    scopes=("content:plan",),
    risk="low",
    idempotency="native",
    timeout_seconds=10.0,
)

CONTENT_PACKAGE: Operation[PackageArgs, PackageResult] = Operation(
    name="content.package",
    description="Assemble the week's drafts and one post per clip into one package to review.",
    args_model=PackageArgs,
    result_model=PackageResult,
    run=package,
    side_effect="read",
    scopes=("content:plan",),
    risk="low",
    idempotency="native",
    timeout_seconds=10.0,
)

PLATFORM_PUBLISH: Operation[PublishArgs, PublishResult] = Operation(
    name="platform.publish",
    description=(
        "Publish posts to the creator's platform API, one idempotent upload per post "
        "(Idempotency-Key derived from the step), so a retry never posts twice."
    ),
    args_model=PublishArgs,
    result_model=PublishResult,
    run=publish,
    side_effect="external",
    risk="medium",
    idempotency="key",
    scopes=("platform:publish",),
    timeout_seconds=90.0,
    max_attempts=6,
    rate_limit_per_minute=30,
    reconcile=_resend,
    destinations=lambda args: [url_destination(args.base_url)],
)

CONTENT_OPERATIONS: tuple[Operation[Any, Any], ...] = (
    CONTENT_BRIEF,
    CONTENT_CALENDAR,
    LLM_GENERATE,
    CONTENT_PACKAGE,
    PLATFORM_PUBLISH,
)
