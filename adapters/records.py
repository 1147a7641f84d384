"""``records.put`` / ``records.get``: a tenant-scoped key/value store in Postgres.

It is the reference target for exactly-once: ``records.put`` writes the record and
appends a row to ``records_writes`` keyed by the step's idempotency key, in one
transaction. A retry, or a reconcile after a worker died between the commit and the
activity's completion, finds that row and returns the earlier result instead of
bumping the version again. Row-level security (``tenant_transaction``) keeps every
tenant inside its own rows whatever the SQL says.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import asyncpg
from pydantic import Field, JsonValue

from stead.contracts.base import Closed
from stead.db.pool import tenant_transaction
from stead.operations.base import AdapterError, Operation, OperationContext


class PutArgs(Closed):
    key: str = Field(min_length=1, max_length=200)
    value: dict[str, JsonValue]


class PutResult(Closed):
    """``created`` is False when an earlier attempt with the same idempotency key wrote it."""

    key: str
    version: int
    created: bool


class GetArgs(Closed):
    key: str = Field(min_length=1, max_length=200)


class GetResult(Closed):
    key: str
    value: dict[str, JsonValue]
    version: int


class _LostRace(Exception):
    """A concurrent attempt with the same idempotency key committed first."""


# The value travels as text and is cast in SQL, so the statement works whether or
# not the pool registered a jsonb codec.
_UPSERT = """
INSERT INTO records AS r (tenant, key, value, version, idempotency_key, updated_at)
VALUES ($1, $2, $3::text::jsonb, 1, $4, now())
ON CONFLICT (tenant, key) DO UPDATE
SET value = EXCLUDED.value,
    version = r.version + 1,
    idempotency_key = EXCLUDED.idempotency_key,
    updated_at = now()
RETURNING version
"""
_CLAIM = """
INSERT INTO records_writes (tenant, key, idempotency_key, version, request_hash)
VALUES ($1, $2, $3, $4, $5)
ON CONFLICT (tenant, idempotency_key) DO NOTHING
RETURNING id
"""
_FIND_WRITE = """
SELECT key, version, request_hash FROM records_writes
WHERE tenant = $1 AND idempotency_key = $2
"""
_GET = "SELECT key, value::text AS value, version FROM records WHERE tenant = $1 AND key = $2"

# Errors that say "the database was unreachable or busy", not "the request is wrong".
_TRANSIENT = (
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.TransactionRollbackError,
    asyncpg.InsufficientResourcesError,
    asyncpg.OperatorInterventionError,
)


async def put(ctx: OperationContext, args: PutArgs) -> PutResult:
    """Write the record once per idempotency key; a repeat returns the first write's result."""
    pool = _pool(ctx)
    request_hash = _request_hash(args)
    with _db_errors("records.put", ctx):
        try:
            async with tenant_transaction(pool, ctx.tenant) as conn:
                prior = await conn.fetchrow(_FIND_WRITE, ctx.tenant, ctx.idempotency_key)
                if prior is not None:
                    return _replayed(prior, args, request_hash, ctx)
                version = int(
                    await conn.fetchval(
                        _UPSERT, ctx.tenant, args.key, _dump(args.value), ctx.idempotency_key
                    )
                )
                claimed = await conn.fetchval(
                    _CLAIM, ctx.tenant, args.key, ctx.idempotency_key, version, request_hash
                )
                if claimed is None:
                    # Raising rolls back the upsert above, so the version bump never lands.
                    raise _LostRace
                return PutResult(key=args.key, version=version, created=True)
        except (_LostRace, asyncpg.UniqueViolationError):
            async with tenant_transaction(pool, ctx.tenant) as conn:
                prior = await conn.fetchrow(_FIND_WRITE, ctx.tenant, ctx.idempotency_key)
            if prior is None:
                raise AdapterError(
                    f"records.put for key {args.key} collided with a concurrent write that "
                    "then vanished; retrying",
                    retryable=True,
                ) from None
            return _replayed(prior, args, request_hash, ctx)


async def reconcile_put(ctx: OperationContext, args: PutArgs) -> PutResult | None:
    """The result of the write this idempotency key made, or None if it never happened."""
    pool = _pool(ctx)
    with _db_errors("records.put reconcile", ctx):
        async with tenant_transaction(pool, ctx.tenant) as conn:
            prior = await conn.fetchrow(_FIND_WRITE, ctx.tenant, ctx.idempotency_key)
    if prior is None:
        return None
    return _replayed(prior, args, _request_hash(args), ctx)


async def get(ctx: OperationContext, args: GetArgs) -> GetResult:
    pool = _pool(ctx)
    with _db_errors("records.get", ctx):
        async with tenant_transaction(pool, ctx.tenant) as conn:
            row = await conn.fetchrow(_GET, ctx.tenant, args.key)
    if row is None:
        raise AdapterError(
            f"record {args.key} not found for tenant {ctx.tenant}; records.put creates it",
            retryable=False,
            details={"key": args.key, "reason": "not_found"},
        )
    return GetResult(key=row["key"], value=json.loads(row["value"]), version=int(row["version"]))


def _replayed(prior: Any, args: PutArgs, request_hash: str, ctx: OperationContext) -> PutResult:
    if prior["request_hash"] != request_hash:
        # Same key, different request: returning the old result would hide that the
        # caller's intent changed; writing again would break at-most-once.
        raise AdapterError(
            f"idempotency key {ctx.idempotency_key} already wrote record {prior['key']} with "
            "different arguments; a step's arguments cannot change between attempts",
            retryable=False,
            details={"key": args.key, "reason": "idempotency_key_reused"},
        )
    return PutResult(key=str(prior["key"]), version=int(prior["version"]), created=False)


def _pool(ctx: OperationContext) -> asyncpg.Pool:
    pool = getattr(ctx.resources, "pool", None)
    if pool is None:
        raise AdapterError(
            "the records adapter has no Postgres pool: the worker must pass "
            "AdapterResources(pool=...) in OperationContext.resources",
            retryable=False,
            details={"reason": "no_pool"},
        )
    return pool


@contextmanager
def _db_errors(what: str, ctx: OperationContext) -> Iterator[None]:
    """Decide retryability once: infrastructure trouble retries, a bad request does not."""
    try:
        yield
    except AdapterError:
        raise
    except _TRANSIENT as exc:
        raise AdapterError(
            f"{what} for tenant {ctx.tenant} could not reach Postgres "
            f"({type(exc).__name__}: {exc}); Temporal retries with the same idempotency key",
            retryable=True,
            details={"reason": type(exc).__name__},
        ) from None
    except asyncpg.PostgresError as exc:
        raise AdapterError(
            f"{what} for tenant {ctx.tenant} was refused by Postgres ({type(exc).__name__}: {exc})",
            retryable=False,
            details={"reason": type(exc).__name__},
        ) from None


def _request_hash(args: PutArgs) -> str:
    return hashlib.sha256(_dump(args.model_dump(mode="json")).encode()).hexdigest()


def _dump(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


RECORDS_PUT: Operation[PutArgs, PutResult] = Operation(
    name="records.put",
    description=(
        "Create or replace the JSON object stored under a key for the run's tenant; "
        "each real write bumps the version. Exactly once per step."
    ),
    args_model=PutArgs,
    result_model=PutResult,
    run=put,
    side_effect="write",
    risk="low",
    idempotency="reconcile",
    scopes=("records:write",),
    timeout_seconds=30.0,
    reconcile=reconcile_put,
)

RECORDS_GET: Operation[GetArgs, GetResult] = Operation(
    name="records.get",
    description="Read the JSON object stored under a key for the run's tenant, with its version.",
    args_model=GetArgs,
    result_model=GetResult,
    run=get,
    side_effect="read",
    risk="low",
    idempotency="native",
    scopes=("records:read",),
    timeout_seconds=30.0,
)
