"""``sql.query`` / ``sql.execute``: parameterised SQL against a tenant's own Postgres.

Where the database is: the worker's configuration, never the plan. A step names a
database (``main`` by default); the worker maps ``(tenant, database)`` to a DSN in
``STEAD_SQL_DATABASES`` (the value may be a ``secret://`` reference, resolved on the
worker), or, when unmapped, resolves ``secret://<tenant>/sql/<database>``. The DSN
and its password therefore never reach args, history or OPA.

What a step may do:

* ``sql.query`` runs in a ``READ ONLY`` transaction, so INSERT, UPDATE, DDL and
  ``nextval`` fail in Postgres itself whatever the SQL says. Its first statement
  takes the snapshot, so the step's own SQL can no longer switch the transaction to
  read-write. It is rated ``low`` risk.
* ``sql.execute`` may write. It is ``side_effect=write, risk=high``: OPA sees that
  and, under the default tenant policy, holds the step for approval. It runs exactly
  once per idempotency key: the key is recorded in ``stead_sql_effects`` *in the
  target database, in the same transaction* as the statement, so a retry or a
  reconcile after a crash finds the earlier effect instead of writing twice.

Values are always bound parameters (``$1``, ``$2``…), never spliced into the text,
and the extended protocol runs exactly one statement per call, so ``; DROP …``
cannot ride along. The role in the DSN should still hold only the privileges the
tenant means to grant: the read-only transaction is the second line, not the first.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import decimal
import hashlib
import json
import math
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import asyncpg
from pydantic import Field, JsonValue, SecretStr

from adapters.credentials import resolve_secret
from stead.contracts.base import Closed
from stead.operations.base import AdapterError, Operation, OperationContext

RESULT_LIMIT = 1024 * 1024  # bytes of rows a result may carry into workflow history
Scalar = str | int | float | bool | None

_TRANSIENT = (
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.CannotConnectNowError,
    asyncpg.TransactionRollbackError,
    asyncpg.InsufficientResourcesError,
    asyncpg.OperatorInterventionError,
)

_LEDGER_DDL = """
CREATE TABLE stead_sql_effects (
    tenant          text NOT NULL,
    idempotency_key text NOT NULL,
    request_hash    text NOT NULL,
    result          jsonb NOT NULL,
    executed_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant, idempotency_key)
)"""
_LEDGER_GRANTED = "SELECT has_table_privilege('stead_sql_effects', 'SELECT, INSERT')"
_FIND_EFFECT = """
SELECT request_hash, result::text AS result FROM stead_sql_effects
WHERE tenant = $1 AND idempotency_key = $2
"""
_RECORD_EFFECT = """
INSERT INTO stead_sql_effects (tenant, idempotency_key, request_hash, result)
VALUES ($1, $2, $3, $4::text::jsonb)
"""
# A SELECT, so it also takes the transaction's snapshot: after it, SET TRANSACTION
# READ WRITE is refused, which closes the one way out of a read-only transaction.
_TIMEOUT = "SELECT set_config('statement_timeout', $1, true)"


class _SqlArgs(Closed):
    database: str = Field(
        default="main",
        pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$",
        description="Which of the tenant's configured databases.",
    )
    sql: str = Field(
        min_length=1,
        max_length=20_000,
        description="One statement; values go in params as $1, $2, ... never in the text.",
    )
    params: list[Scalar] = Field(default_factory=list, max_length=100)
    timeout_seconds: float = Field(default=10.0, gt=0, le=60)


class SqlQueryArgs(_SqlArgs):
    max_rows: int = Field(default=500, ge=1, le=5_000)


class SqlExecuteArgs(_SqlArgs):
    max_rows: int = Field(default=100, ge=0, le=1_000, description="RETURNING rows kept.")


class SqlQueryResult(Closed):
    columns: list[str]
    rows: list[dict[str, JsonValue]]
    row_count: int = Field(description="Rows returned here (not counting those cut off).")
    truncated: bool = Field(description="True when max_rows or the size limit cut the result.")


class SqlExecuteResult(Closed):
    command: str = Field(description="The statement's tag, e.g. INSERT, UPDATE, DELETE.")
    rows_affected: int
    rows: list[dict[str, JsonValue]] = Field(default_factory=list, description="RETURNING rows.")
    replayed: bool = Field(default=False, description="True when an earlier attempt wrote it.")


class SqlDatabases:
    """The tenants' databases on this worker: DSNs (or references) and lazily opened pools."""

    def __init__(
        self, configured: Mapping[str, Mapping[str, SecretStr]], *, max_pool_size: int = 4
    ) -> None:
        self._configured = {t: dict(dbs) for t, dbs in configured.items()}
        self._pools: dict[tuple[str, str], asyncpg.Pool] = {}
        self._ledger_ready: set[tuple[str, str]] = set()
        self._lock = asyncio.Lock()
        self._max = max_pool_size

    def __repr__(self) -> str:
        return f"SqlDatabases({sorted(self._configured)} tenants, {len(self._pools)} pools)"

    async def pool(self, ctx: OperationContext, database: str) -> asyncpg.Pool:
        key = (ctx.tenant, database)
        async with self._lock:
            if key not in self._pools:
                dsn = await self._dsn(ctx, database)
                self._pools[key] = await _open_pool(dsn, ctx.tenant, database, self._max)
            return self._pools[key]

    async def ensure_ledger(self, ctx: OperationContext, database: str, pool: asyncpg.Pool) -> None:
        """Create ``stead_sql_effects`` once, if missing; say exactly what to run if we may not."""
        key = (ctx.tenant, database)
        if key in self._ledger_ready:
            return
        where = f"database {database} of tenant {ctx.tenant}"
        with _db_errors("sql.execute", ctx, database):
            async with pool.acquire() as conn:
                if await conn.fetchval("SELECT to_regclass('stead_sql_effects')") is None:
                    try:
                        await conn.execute(_LEDGER_DDL)
                    except asyncpg.DuplicateTableError:
                        pass  # another worker created it first
                    except asyncpg.InsufficientPrivilegeError:
                        raise AdapterError(
                            f"sql.execute needs the table stead_sql_effects in {where}, and "
                            "its role may not create it; have the owner run: "
                            + " ".join(_LEDGER_DDL.split()),
                            retryable=False,
                            details={"reason": "no_effect_ledger", "database": database},
                        ) from None
                allowed = await conn.fetchval(_LEDGER_GRANTED)
                role = await conn.fetchval("SELECT current_user")
        if not allowed:
            raise AdapterError(
                f"sql.execute records each write in stead_sql_effects in {where}, but its "
                f"role may not; have the owner run: GRANT SELECT, INSERT ON stead_sql_effects "
                f"TO {role}",
                retryable=False,
                details={"reason": "no_effect_ledger", "database": database},
            )
        self._ledger_ready.add(key)

    async def aclose(self) -> None:
        pools, self._pools = list(self._pools.values()), {}
        for pool in pools:
            await pool.close()

    async def _dsn(self, ctx: OperationContext, database: str) -> str:
        configured = self._configured.get(ctx.tenant, {}).get(database)
        text = configured.get_secret_value() if configured is not None else None
        if text is not None and not text.startswith("secret://"):
            return text
        ref = text or f"secret://{ctx.tenant}/sql/{database}"
        if text is None and getattr(ctx.resources, "secrets", None) is None:
            raise AdapterError(
                f"tenant {ctx.tenant} has no SQL database {database!r} on this worker: map it "
                f'in STEAD_SQL_DATABASES (\'{{"{ctx.tenant}": {{"{database}": "postgresql://..."}}}}\''
                f") or store the DSN as {ref}",
                retryable=False,
                details={"reason": "no_database", "database": database},
            )
        # A DSN names its own host: it is sent nowhere but to the database it names.
        return (await resolve_secret(ctx, ref, adapter="sql", destination=None)).get_secret_value()


async def query(ctx: OperationContext, args: SqlQueryArgs) -> SqlQueryResult:
    """Run one statement read-only and return at most ``max_rows`` rows."""
    pool = await _databases(ctx).pool(ctx, args.database)
    with _db_errors("sql.query", ctx, args.database):
        async with pool.acquire() as conn, conn.transaction(readonly=True):
            await conn.execute(_TIMEOUT, _millis(args.timeout_seconds))
            statement = await conn.prepare(args.sql)
            cursor = await statement.cursor(*args.params)
            records = await cursor.fetch(args.max_rows + 1)
            columns = _columns(statement)
    rows, truncated = _rows(records, columns, args.max_rows)
    return SqlQueryResult(columns=columns, rows=rows, row_count=len(rows), truncated=truncated)


async def execute(ctx: OperationContext, args: SqlExecuteArgs) -> SqlExecuteResult:
    """Run one writing statement and record its key beside it, in one transaction."""
    databases = _databases(ctx)
    pool = await databases.pool(ctx, args.database)
    await databases.ensure_ledger(ctx, args.database, pool)
    request_hash = _request_hash(args)
    with _db_errors("sql.execute", ctx, args.database):
        try:
            async with pool.acquire() as conn, conn.transaction():
                await conn.execute(_TIMEOUT, _millis(args.timeout_seconds))
                prior = await conn.fetchrow(_FIND_EFFECT, ctx.tenant, ctx.idempotency_key)
                if prior is not None:
                    return _replayed(prior, request_hash, ctx)
                statement = await conn.prepare(args.sql)
                records = await statement.fetch(*args.params)
                columns = _columns(statement) if records else []
                command, affected = _status(statement.get_statusmsg())
                rows, _ = _rows(records, columns, args.max_rows)
                result = SqlExecuteResult(command=command, rows_affected=affected, rows=rows)
                await conn.execute(
                    _RECORD_EFFECT,
                    ctx.tenant,
                    ctx.idempotency_key,
                    request_hash,
                    result.model_dump_json(),
                )
                return result
        except asyncpg.UniqueViolationError as exc:
            if exc.table_name != "stead_sql_effects":
                raise
            # A concurrent attempt of this step committed first; this one rolled back.
            found = await reconcile_execute(ctx, args)
            if found is None:
                raise AdapterError(
                    "sql.execute collided with a concurrent attempt that then vanished; retrying",
                    retryable=True,
                ) from None
            return found


async def reconcile_execute(ctx: OperationContext, args: SqlExecuteArgs) -> SqlExecuteResult | None:
    """The result this idempotency key already produced, or None if it never committed."""
    databases = _databases(ctx)
    pool = await databases.pool(ctx, args.database)
    await databases.ensure_ledger(ctx, args.database, pool)
    with _db_errors("sql.execute reconcile", ctx, args.database):
        async with pool.acquire() as conn:
            prior = await conn.fetchrow(_FIND_EFFECT, ctx.tenant, ctx.idempotency_key)
    return None if prior is None else _replayed(prior, _request_hash(args), ctx)


def _replayed(prior: Any, request_hash: str, ctx: OperationContext) -> SqlExecuteResult:
    if prior["request_hash"] != request_hash:
        raise AdapterError(
            f"idempotency key {ctx.idempotency_key} already ran a different statement; a "
            "step's arguments cannot change between attempts",
            retryable=False,
            details={"reason": "idempotency_key_reused"},
        )
    result = SqlExecuteResult.model_validate_json(prior["result"])
    return result.model_copy(update={"replayed": True})


async def _open_pool(dsn: str, tenant: str, database: str, max_size: int) -> asyncpg.Pool:
    try:
        pool = await asyncpg.create_pool(
            dsn,
            min_size=0,
            max_size=max_size,
            init=_init_connection,
            server_settings={"application_name": f"stead-sql-{tenant}"[:63]},
        )
    except _TRANSIENT as exc:
        raise AdapterError(
            f"database {database} of tenant {tenant} is unreachable ({type(exc).__name__}); "
            "retrying",
            retryable=True,
            details={"reason": type(exc).__name__, "database": database},
        ) from None
    except (asyncpg.PostgresError, asyncpg.InterfaceError, ValueError) as exc:
        # The message of a bad DSN may quote the DSN; name only the error's kind.
        raise AdapterError(
            f"cannot connect to database {database} of tenant {tenant} "
            f"({type(exc).__name__}); check its DSN",
            retryable=False,
            details={"reason": type(exc).__name__, "database": database},
        ) from None
    assert pool is not None
    return pool


async def _init_connection(conn: asyncpg.Connection) -> None:
    for name in ("json", "jsonb"):
        await conn.set_type_codec(
            name,
            schema="pg_catalog",
            encoder=lambda v: v if isinstance(v, str) else json.dumps(v),
            decoder=json.loads,
        )


def _columns(statement: asyncpg.prepared_stmt.PreparedStatement) -> list[str]:
    names = [attr.name for attr in statement.get_attributes()]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise AdapterError(
            f"the result has duplicate column name(s) {', '.join(duplicates)}; alias them "
            "(SELECT a.id AS a_id, b.id AS b_id ...)",
            retryable=False,
            details={"reason": "duplicate_columns"},
        )
    return names


def _rows(
    records: list[asyncpg.Record], columns: list[str], limit: int
) -> tuple[list[dict[str, JsonValue]], bool]:
    rows: list[dict[str, JsonValue]] = []
    size = 0
    for record in records[:limit]:
        row = {name: _jsonable(record[i]) for i, name in enumerate(columns)}
        size += len(json.dumps(row, default=str))
        if size > RESULT_LIMIT:
            return rows, True
        rows.append(row)
    return rows, len(records) > limit


def _jsonable(value: Any) -> JsonValue:
    """Postgres values as JSON: exact numerics and binary as strings, times as ISO 8601."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)  # JSON has no NaN or Infinity
    if isinstance(value, decimal.Decimal):
        return str(value)
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, asyncpg.Record):
        return {k: _jsonable(v) for k, v in value.items()}
    return str(value)


def _status(message: str) -> tuple[str, int]:
    """``INSERT 0 3`` -> (INSERT, 3); ``CREATE TABLE`` -> (CREATE TABLE, 0)."""
    words = message.split()
    if words and words[-1].isdigit():
        command = words[0]
        return command, int(words[-1])
    return message, 0


def _millis(seconds: float) -> str:
    return str(max(1, int(seconds * 1000)))


def _request_hash(args: SqlExecuteArgs) -> str:
    canonical = json.dumps(args.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def _databases(ctx: OperationContext) -> SqlDatabases:
    databases = getattr(ctx.resources, "sql", None)
    if not isinstance(databases, SqlDatabases):
        raise AdapterError(
            "this worker has no SQL databases configured for the sql adapter: the worker "
            "must pass AdapterResources(sql=SqlDatabases(...)) (STEAD_SQL_DATABASES)",
            retryable=False,
            details={"reason": "no_sql"},
        )
    return databases


@contextmanager
def _db_errors(what: str, ctx: OperationContext, database: str) -> Iterator[None]:
    """Decide retryability once: an unreachable database retries, a refused statement not."""
    where = f"{what} on database {database} of tenant {ctx.tenant}"
    try:
        yield
    except AdapterError:
        raise
    except asyncpg.QueryCanceledError:  # before _TRANSIENT: it is an OperatorInterventionError
        raise AdapterError(
            f"{where} ran past its statement timeout and was cancelled; raise "
            "timeout_seconds (at most 60) or narrow the query",
            retryable=False,
            details={"reason": "statement_timeout", "database": database},
        ) from None
    except _TRANSIENT as exc:
        raise AdapterError(
            f"{where} could not reach Postgres ({type(exc).__name__}: {exc}); retrying",
            retryable=True,
            details={"reason": type(exc).__name__, "database": database},
        ) from None
    except asyncpg.ReadOnlySQLTransactionError as exc:
        raise AdapterError(
            f"{where} was refused: {exc}. sql.query is read-only; use sql.execute for "
            "writes (policy decides whether the tenant may)",
            retryable=False,
            details={"reason": "read_only", "database": database},
        ) from None
    except (asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        raise AdapterError(
            f"{where} was refused ({type(exc).__name__}: {exc})",
            retryable=False,
            details={"reason": type(exc).__name__, "database": database},
        ) from None


SQL_QUERY: Operation[SqlQueryArgs, SqlQueryResult] = Operation(
    name="sql.query",
    description=(
        "Run one parameterised, read-only SQL statement ($1, $2 ... bound from params) "
        "against one of the tenant's databases and return the rows as objects."
    ),
    args_model=SqlQueryArgs,
    result_model=SqlQueryResult,
    run=query,
    side_effect="read",
    risk="low",
    idempotency="native",
    scopes=("sql:read",),
    timeout_seconds=70.0,
    max_attempts=3,
    rate_limit_per_minute=600,
)

SQL_EXECUTE: Operation[SqlExecuteArgs, SqlExecuteResult] = Operation(
    name="sql.execute",
    description=(
        "Run one parameterised SQL statement that may write (INSERT/UPDATE/DELETE ... "
        "RETURNING) against one of the tenant's databases, exactly once per step."
    ),
    args_model=SqlExecuteArgs,
    result_model=SqlExecuteResult,
    run=execute,
    side_effect="write",
    risk="high",
    idempotency="reconcile",
    scopes=("sql:write",),
    timeout_seconds=70.0,
    max_attempts=5,
    rate_limit_per_minute=120,
    reconcile=reconcile_execute,
)
