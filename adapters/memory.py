"""``memory.remember``/``memory.history`` (versioned memory) and ``memory.observe``/
``memory.series`` (time series): a step writes or reads tenant memory.

Content, sensitivity and the stated reason come from the plan; who wrote it and from
where (principal, workflow, step) come from the ``OperationContext`` the worker
builds, never from the plan. The step's idempotency key is the version's request
key, so a retry or a reconcile after a crash finds the version the first attempt
wrote instead of appending another.

A step may remember structured ``data`` (an earlier step's output, by ``$ref``)
instead of, or under, a line of ``content``. Memory stores text, so the value is
rendered once, deterministically (sorted keys, a fenced JSON block after the
heading), and the same arguments always give the same text and content hash. The
block is the value itself: ``remembered_data`` reads it back, and ``memory.history``
returns it parsed, so a later run recalls what an earlier one found, not a summary.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from pydantic import AfterValidator, AwareDatetime, Field, JsonValue, model_validator

from adapters.base import AdapterError, Operation, OperationContext
from stead.contracts.base import Closed
from stead.memory.contracts import (
    MAX_CONTENT,
    Aggregate,
    LabelName,
    Labels,
    MemoryKey,
    MemoryVersion,
    Namespace,
    ObserveRequest,
    ObserveResult,
    Provenance,
    RememberRequest,
    Sensitivity,
    SeriesName,
    SeriesQuery,
)
from stead.memory.errors import MemoryConflict, MemoryUnavailable
from stead.memory.series import parse_span
from stead.memory.service import MemoryService

TEN_YEARS = 10 * 365 * 24 * 3600
DATA_OPEN = "\n\n```json\n"
DATA_CLOSE = "\n```"
# What a memory read may hand to a step (and so to workflow history and model
# providers): never pii or secrets.
SHAREABLE = frozenset({"public", "internal"})


def render_memory(content: str | None, data: JsonValue) -> str:
    """The stored text of a remembered value: ``content`` (or a neutral heading), then the
    data as sorted, indented JSON in a fenced block. Pure, so a retry writes the same text."""
    heading = (content or "").strip() or "Structured record (JSON):"
    if data is None:
        return heading
    body = json.dumps(data, ensure_ascii=False, sort_keys=True, indent=1)
    return f"{heading}{DATA_OPEN}{body}{DATA_CLOSE}"


def remembered_data(text: str) -> JsonValue:
    """The structured value ``render_memory`` put in ``text``, or None for plain text.

    JSON escapes newlines inside strings, so the last opening fence is the block's.
    """
    start = text.rfind(DATA_OPEN)
    if start < 0 or not text.endswith(DATA_CLOSE):
        return None
    try:
        value: JsonValue = json.loads(text[start + len(DATA_OPEN) : -len(DATA_CLOSE)])
    except ValueError:
        return None
    return value


class RememberArgs(Closed):
    namespace: Namespace
    key: MemoryKey
    content: str | None = Field(
        default=None,
        min_length=1,
        max_length=MAX_CONTENT,
        description="The text to remember; with data, the heading above it.",
    )
    data: JsonValue = Field(
        default=None,
        description="A structured value (e.g. a step's output by $ref), stored as sorted "
        "JSON under the content and returned parsed by memory.history.",
    )
    sensitivity: Sensitivity = "internal"
    reason: str = Field(
        min_length=1, max_length=2_000, description="Why this is worth remembering."
    )
    expires_in_seconds: int | None = Field(default=None, ge=1, le=TEN_YEARS)
    valid_from: AwareDatetime | None = None
    valid_to: AwareDatetime | None = None
    source_refs: list[str] = Field(default_factory=list, max_length=50)

    @model_validator(mode="after")
    def _fits(self) -> RememberArgs:
        if self.content is None and self.data is None:
            raise ValueError("give content, data, or both: there is nothing to remember")
        size = len(self.text)
        if size > MAX_CONTENT:
            raise ValueError(
                f"content and data render to {size} characters; one memory version holds at "
                f"most {MAX_CONTENT}. Remember a summary, or fewer fields of the output"
            )
        return self

    @property
    def text(self) -> str:
        """What is stored: the content, with the data rendered under it."""
        return render_memory(self.content, self.data)


class RememberOpResult(Closed):
    """``created`` is False when an earlier attempt of this step wrote the version."""

    namespace: str
    key: str
    version: int
    content_hash: str
    created: bool
    indexed: bool


async def remember(ctx: OperationContext, args: RememberArgs) -> RememberOpResult:
    service = _service(ctx)
    expires = None
    if args.expires_in_seconds is not None:
        expires = datetime.now(UTC) + timedelta(seconds=args.expires_in_seconds)
    request = RememberRequest(
        tenant=ctx.tenant,
        namespace=args.namespace,
        key=args.key,
        content=args.text,
        sensitivity=args.sensitivity,
        valid_from=args.valid_from,
        valid_to=args.valid_to,
        expires_at=expires,
        provenance=Provenance(
            principal=ctx.principal,
            workflow_id=ctx.workflow_id,
            step_id=ctx.step_id,
            reason=args.reason,
            source_refs=tuple(args.source_refs),
        ),
        request_key=ctx.idempotency_key,
        # The expiry is derived from the clock, so attempts differ there; the
        # arguments are what must not change between attempts.
        request_fingerprint=_args_hash(args),
    )
    try:
        result = await service.remember(request)
    except MemoryUnavailable as exc:
        raise AdapterError(exc.message, retryable=True, details={"reason": "unavailable"}) from None
    except MemoryConflict as exc:
        raise AdapterError(
            exc.message, retryable=False, details={"reason": "idempotency_key_reused"}
        ) from None
    return _result(result.version, created=result.created, indexed=result.indexed)


async def reconcile_remember(ctx: OperationContext, args: RememberArgs) -> RememberOpResult | None:
    """The version this step's idempotency key wrote, or None if it never committed."""
    try:
        found = await _service(ctx).find_written(ctx.tenant, ctx.idempotency_key)
    except MemoryUnavailable as exc:
        raise AdapterError(exc.message, retryable=True, details={"reason": "unavailable"}) from None
    if found is None:
        return None
    return _result(found, created=False, indexed=found.index_state == "indexed")


def _result(version: MemoryVersion, *, created: bool, indexed: bool) -> RememberOpResult:
    return RememberOpResult(
        namespace=version.namespace,
        key=version.key,
        version=version.version,
        content_hash=version.content_hash,
        created=created,
        indexed=indexed,
    )


def _service(ctx: OperationContext) -> MemoryService:
    service = getattr(ctx.resources, "memory", None)
    if not isinstance(service, MemoryService):
        raise AdapterError(
            "the memory adapter has no memory service: the worker must set "
            "AdapterResources.memory (see activities/memory.py)",
            retryable=False,
            details={"reason": "no_memory_service"},
        )
    return service


def _args_hash(args: RememberArgs) -> str:
    body = json.dumps(args.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(body.encode()).hexdigest()


# ---------------------------------------------------------------- history


class HistoryArgs(Closed):
    namespace: Namespace
    key: MemoryKey
    versions: int = Field(default=1, ge=1, le=10, description="Most recent versions to return.")
    required: bool = Field(default=False, description="Fail the step when none exists.")


class HistoryItem(Closed):
    """One version as a step sees it: the text, the data parsed back, and its provenance."""

    namespace: str
    key: str
    version: int
    content: str
    data: JsonValue = None
    written_by: str
    workflow_id: str | None = None
    step_id: str | None = None
    recorded_at: str
    reason: str = ""


class HistoryResult(Closed):
    items: list[HistoryItem] = Field(description="Oldest first.")


async def history(ctx: OperationContext, args: HistoryArgs) -> HistoryResult:
    """The newest shareable versions of one key, e.g. what earlier runs remembered."""
    found = await shareable_versions(ctx, args.namespace, args.key)
    if not found and args.required:
        raise AdapterError(
            f"memory {args.namespace}/{args.key} of tenant {ctx.tenant} does not exist (or "
            "may not be shared with a step); remember it first",
            retryable=False,
            details={"reason": "memory_missing", "memory": f"{args.namespace}/{args.key}"},
        )
    return HistoryResult(items=[history_item(v) for v in found[-args.versions :]])


def history_item(version: MemoryVersion) -> HistoryItem:
    content = version.content or ""
    return HistoryItem(
        namespace=version.namespace,
        key=version.key,
        version=version.version,
        content=content,
        data=remembered_data(content),
        written_by=version.provenance.principal,
        workflow_id=version.provenance.workflow_id,
        step_id=version.provenance.step_id,
        recorded_at=version.recorded_at.isoformat(),
        reason=version.provenance.reason,
    )


async def shareable_versions(
    ctx: OperationContext, namespace: str, key: str
) -> list[MemoryVersion]:
    """Every live version of a key a step may see, oldest first: public and internal only.

    Through the worker's memory service when it has one (its read gate asks OPA), else
    straight from Postgres, the truth.
    """
    service = getattr(ctx.resources, "memory", None)
    if isinstance(service, MemoryService):
        try:
            found = await service.history(ctx.tenant, namespace, key, principal=ctx.principal)
        except MemoryUnavailable as exc:
            raise AdapterError(
                exc.message, retryable=True, details={"reason": "unavailable"}
            ) from None
    else:
        found = await _versions_from_postgres(ctx, namespace, key)
    now = datetime.now(UTC)
    return [
        v
        for v in found
        if v.content is not None
        and not v.withheld
        and v.erased_at is None
        and v.sensitivity in SHAREABLE
        and (v.expires_at is None or v.expires_at > now)
    ]


async def _versions_from_postgres(
    ctx: OperationContext, namespace: str, key: str
) -> list[MemoryVersion]:
    import asyncpg

    from stead.db.pool import tenant_transaction
    from stead.memory import store

    pool = getattr(ctx.resources, "pool", None)
    if not isinstance(pool, asyncpg.Pool):
        raise AdapterError(
            "reading memory needs the worker's Postgres pool (AdapterResources.pool)",
            retryable=False,
            details={"reason": "no_pool"},
        )
    rows: list[Any]
    try:
        async with tenant_transaction(pool, ctx.tenant) as conn:
            rows = await store.history(conn, ctx.tenant, namespace, key)
    except (OSError, asyncpg.PostgresConnectionError) as exc:
        raise AdapterError(
            f"memory is unreachable ({type(exc).__name__}); Temporal retries",
            retryable=True,
            details={"reason": "unavailable"},
        ) from None
    return [store.version_from_row(row) for row in rows]


MEMORY_HISTORY: Operation[HistoryArgs, HistoryResult] = Operation(
    name="memory.history",
    description=(
        "Read the newest versions of one of the tenant's memories (e.g. what earlier runs "
        "remembered), with who wrote each, from which run and step, and structured data "
        "parsed back; pii and secrets are never returned."
    ),
    args_model=HistoryArgs,
    result_model=HistoryResult,
    run=history,
    side_effect="read",
    risk="low",
    idempotency="native",
    scopes=("memory:read",),
    timeout_seconds=30.0,
)

MEMORY_REMEMBER: Operation[RememberArgs, RememberOpResult] = Operation(
    name="memory.remember",
    description=(
        "Remember a fact for the run's tenant under namespace/key as a new version (old "
        "versions stay readable): text in content, a structured value (e.g. a step's output "
        "by $ref) in data, or both. Say why in reason; mark personal data sensitivity=pii. "
        "Exactly once per step."
    ),
    args_model=RememberArgs,
    result_model=RememberOpResult,
    run=remember,
    side_effect="write",
    risk="low",
    idempotency="reconcile",
    scopes=("memory:write",),
    timeout_seconds=60.0,
    reconcile=reconcile_remember,
)


# ---------------------------------------------------------------- time series


RUNTIME_SERIES = "stead."


def step_series(name: str) -> str:
    """A series a step may write: not one the runtime records under ``stead.`` (the value
    a run captured, which ``stead slo --weeks`` reports, must not be a plan's to claim)."""
    if name.startswith(RUNTIME_SERIES):
        raise ValueError(
            f"series {name!r} is recorded by Stead itself ({RUNTIME_SERIES}*, e.g. the value "
            "a run captured at its close); a step writes series under another name"
        )
    return name


StepSeriesName = Annotated[SeriesName, AfterValidator(step_series)]


class ObserveArgs(Closed):
    series: StepSeriesName = Field(description="e.g. stock.mismatch")
    value: float = Field(allow_inf_nan=False)
    labels: Labels = Field(default_factory=dict, description='e.g. {"sku": "A-1"}')
    observed_at: AwareDatetime | None = Field(default=None, description="None: now.")
    reason: str = Field(default="", max_length=2_000)


def _point(
    ctx: OperationContext, args: ObserveArgs | ObserveManyArgs, point: PointArgs, key: str
) -> ObserveRequest:
    """A point as the step writes it: provenance from the context, never from the plan."""
    return ObserveRequest(
        tenant=ctx.tenant,
        series=args.series,
        value=point.value,
        labels=point.labels,
        observed_at=args.observed_at,
        provenance=Provenance(
            principal=ctx.principal,
            workflow_id=ctx.workflow_id,
            step_id=ctx.step_id,
            reason=args.reason,
        ),
        request_key=key,
    )


@contextmanager
def _write_errors() -> Iterator[None]:
    """Postgres away: retry. The key already wrote something else: never retry."""
    try:
        yield
    except MemoryUnavailable as exc:
        raise AdapterError(exc.message, retryable=True, details={"reason": "unavailable"}) from None
    except MemoryConflict as exc:
        raise AdapterError(
            exc.message, retryable=False, details={"reason": "idempotency_key_reused"}
        ) from None


async def observe(ctx: OperationContext, args: ObserveArgs) -> ObserveResult:
    """Append one point; the step's idempotency key makes a retry return the first."""
    point = PointArgs(value=args.value, labels=args.labels)
    with _write_errors():
        return await _service(ctx).observations.observe(
            _point(ctx, args, point, ctx.idempotency_key)
        )


async def reconcile_observe(ctx: OperationContext, args: ObserveArgs) -> ObserveResult | None:
    """The point this step's idempotency key wrote, or None if it never committed."""
    try:
        return await _service(ctx).observations.written(ctx.tenant, ctx.idempotency_key)
    except MemoryUnavailable as exc:
        raise AdapterError(exc.message, retryable=True, details={"reason": "unavailable"}) from None


class PointArgs(Closed):
    value: float = Field(allow_inf_nan=False)
    labels: Labels = Field(default_factory=dict, description='e.g. {"sku": "A-1"}')


class ObserveManyArgs(Closed):
    series: StepSeriesName = Field(description="e.g. commerce.sku")
    points: list[PointArgs] = Field(
        max_length=5_000, description="One per label set, e.g. an earlier step's output by $ref."
    )
    labels: Labels = Field(default_factory=dict, description="Added to every point's labels.")
    observed_at: AwareDatetime | None = Field(default=None, description="None: now.")
    reason: str = Field(default="", max_length=2_000)


class ObserveManyResult(Closed):
    """Counts only: the points are in memory, and history stays small."""

    series: str
    observed: int
    created: int = Field(description="Fewer than observed when an earlier attempt wrote them.")


def _point_requests(ctx: OperationContext, args: ObserveManyArgs) -> list[ObserveRequest]:
    """One request per point, keyed ``<step key>#<n>``: the same arguments (a retry's)
    give the same keys, so a retried batch finds its points instead of adding more."""
    return [
        _point(
            ctx,
            args,
            PointArgs(value=point.value, labels={**point.labels, **args.labels}),
            f"{ctx.idempotency_key}#{n}",
        )
        for n, point in enumerate(args.points)
    ]


async def observe_many(ctx: OperationContext, args: ObserveManyArgs) -> ObserveManyResult:
    """Append every point in one transaction: a step per SKU would be a plan of hundreds."""
    with _write_errors():
        written = await _service(ctx).observations.observe_many(_point_requests(ctx, args))
    return ObserveManyResult(
        series=args.series, observed=len(written), created=sum(p.created for p in written)
    )


async def reconcile_observe_many(
    ctx: OperationContext, args: ObserveManyArgs
) -> ObserveManyResult | None:
    """The batch this step's key wrote (all its points commit together), or None."""
    keys = [r.request_key or "" for r in _point_requests(ctx, args)]
    if not keys:
        return None
    try:
        found = await _service(ctx).observations.written_many(ctx.tenant, keys)
    except MemoryUnavailable as exc:
        raise AdapterError(exc.message, retryable=True, details={"reason": "unavailable"}) from None
    if found is None:
        return None
    return ObserveManyResult(series=args.series, observed=len(found), created=0)


class SeriesArgs(Closed):
    series: SeriesName
    labels: Labels = Field(default_factory=dict, description="Only points with these labels.")
    window: str = Field(default="7d", description="How far back from until: 15m, 12h, 7d, 4w.")
    until: AwareDatetime | None = Field(default=None, description="None: now.")
    bucket: str = Field(default="1d", description="Bucket width: 15m, 1h, 1d, 1w.")
    aggregate: Aggregate = "avg"
    by: LabelName | None = Field(
        default=None, description="Group by this label: each of its values (e.g. each sku)."
    )
    last: int | None = Field(
        default=None, ge=1, le=10_000, description="Only the newest this many points per group."
    )

    @model_validator(mode="after")
    def _spans(self) -> SeriesArgs:
        parse_span(self.window)
        parse_span(self.bucket)
        return self


class SeriesOpPoint(Closed):
    bucket: str = Field(description="Start of the bucket, ISO 8601 UTC.")
    value: float
    samples: int
    group: str | None = Field(default=None, description="The `by` label's value.")


class SeriesOpResult(Closed):
    series: str
    aggregate: str
    points: list[SeriesOpPoint] = Field(description="Oldest first; empty buckets left out.")


async def series(ctx: OperationContext, args: SeriesArgs) -> SeriesOpResult:
    """A window of one series in buckets, e.g. daily mismatch counts of one SKU."""
    until = args.until or datetime.now(UTC)
    query = SeriesQuery(
        tenant=ctx.tenant,
        series=args.series,
        labels=args.labels,
        since=until - parse_span(args.window),
        until=until,
        bucket=parse_span(args.bucket),
        aggregate=args.aggregate,
        by=args.by,
        last=args.last,
    )
    try:
        found = await _service(ctx).observations.series(query)
    except MemoryUnavailable as exc:
        raise AdapterError(exc.message, retryable=True, details={"reason": "unavailable"}) from None
    except ValueError as exc:
        raise AdapterError(str(exc), retryable=False, details={"reason": "bad_window"}) from None
    return SeriesOpResult(
        series=found.series,
        aggregate=found.aggregate,
        points=[
            SeriesOpPoint(
                bucket=p.bucket.isoformat(), value=p.value, samples=p.samples, group=p.group
            )
            for p in found.points
        ],
    )


MEMORY_OBSERVE: Operation[ObserveArgs, ObserveResult] = Operation(
    name="memory.observe",
    description=(
        "Record one numeric observation of a series for the run's tenant (e.g. "
        'stock.mismatch with labels {"sku": "A-1"}), so later runs see a trend. '
        "Exactly once per step."
    ),
    args_model=ObserveArgs,
    result_model=ObserveResult,
    run=observe,
    side_effect="write",
    risk="low",
    idempotency="reconcile",
    scopes=("memory:write",),
    timeout_seconds=30.0,
    reconcile=reconcile_observe,
)

MEMORY_OBSERVE_MANY: Operation[ObserveManyArgs, ObserveManyResult] = Operation(
    name="memory.observe_many",
    description=(
        "Record many numeric observations of one series at once (e.g. commerce.sku with one "
        'point per SKU, labels {"sku": ..., "kind": "mismatch"}), all or none. Exactly once '
        "per step."
    ),
    args_model=ObserveManyArgs,
    result_model=ObserveManyResult,
    run=observe_many,
    side_effect="write",
    risk="low",
    idempotency="reconcile",
    scopes=("memory:write",),
    timeout_seconds=60.0,
    reconcile=reconcile_observe_many,
)

MEMORY_SERIES: Operation[SeriesArgs, SeriesOpResult] = Operation(
    name="memory.series",
    description=(
        "Read a window of one of the tenant's series in buckets (15m, 1h, 1d, 1w) with one "
        "aggregate (avg, min, max, sum, count, last), optionally only points with given labels, "
        "grouped by one label (by) and only the newest points of each group (last)."
    ),
    args_model=SeriesArgs,
    result_model=SeriesOpResult,
    run=series,
    side_effect="read",
    risk="low",
    idempotency="native",
    scopes=("memory:read",),
    timeout_seconds=30.0,
)
