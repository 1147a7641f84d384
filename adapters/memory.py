"""``memory.remember``: a step writes a versioned memory, with the run as its provenance.

Content, sensitivity and the stated reason come from the plan; who wrote it and from
where (principal, workflow, step) come from the ``OperationContext`` the worker
builds, never from the plan. The step's idempotency key is the version's request
key, so a retry or a reconcile after a crash finds the version the first attempt
wrote instead of appending another.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime, timedelta

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from adapters.base import AdapterError, Operation, OperationContext
from stead.memory.contracts import (
    MAX_CONTENT,
    MemoryKey,
    MemoryVersion,
    Namespace,
    Provenance,
    RememberRequest,
    Sensitivity,
)
from stead.memory.errors import MemoryConflict, MemoryUnavailable
from stead.memory.service import MemoryService

TEN_YEARS = 10 * 365 * 24 * 3600


class RememberArgs(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    namespace: Namespace
    key: MemoryKey
    content: str = Field(min_length=1, max_length=MAX_CONTENT)
    sensitivity: Sensitivity = "internal"
    reason: str = Field(
        min_length=1, max_length=2_000, description="Why this is worth remembering."
    )
    expires_in_seconds: int | None = Field(default=None, ge=1, le=TEN_YEARS)
    valid_from: AwareDatetime | None = None
    valid_to: AwareDatetime | None = None
    source_refs: list[str] = Field(default_factory=list, max_length=50)


class RememberOpResult(BaseModel):
    """``created`` is False when an earlier attempt of this step wrote the version."""

    model_config = ConfigDict(extra="forbid", frozen=True)

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
        content=args.content,
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


MEMORY_REMEMBER: Operation[RememberArgs, RememberOpResult] = Operation(
    name="memory.remember",
    description=(
        "Remember a fact for the run's tenant under namespace/key as a new version (old "
        "versions stay readable). Say why in reason; mark personal data sensitivity=pii. "
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
