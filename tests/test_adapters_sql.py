"""``sql.query`` / ``sql.execute`` against a real Postgres database the test creates.

The session's embedded Postgres hosts a fresh database owned by a fresh login role:
the "tenant's own database", reached only through the DSN the worker maps to it.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest
import pytest_asyncio
from pydantic import SecretStr

from adapters.registry import AdapterResources, default_catalog
from adapters.sql import SqlDatabases
from stead.operations.base import AdapterError, OperationContext
from stead.operations.catalog import InvalidArguments
from stead.secrets import EnvSecretBackend, Secrets
from stead.settings import Settings

CATALOG = default_catalog(plugins=False)
QUERY = CATALOG.get("sql.query")
EXECUTE = CATALOG.get("sql.execute")
TENANT = "acme"

_SCHEMA = """
CREATE SEQUENCE invoice_numbers;
CREATE TABLE customers (
    id      serial PRIMARY KEY,
    name    text NOT NULL,
    balance numeric(12, 2) NOT NULL DEFAULT 0,
    created timestamptz NOT NULL DEFAULT '2026-01-02T03:04:05Z',
    tags    text[] NOT NULL DEFAULT '{}',
    meta    jsonb NOT NULL DEFAULT '{}',
    uid     uuid NOT NULL DEFAULT '00000000-0000-0000-0000-000000000001',
    raw     bytea
);
INSERT INTO customers (name, balance, tags, meta, raw)
VALUES ('Ada', 12.50, '{vip}', '{"tier": 1}', '\\x0102'),
       ('Bob', 0, '{}', '{}', NULL),
       ('Cy', 3.25, '{}', '{}', NULL);
"""


@dataclass(frozen=True)
class TenantDb:
    owner_dsn: str
    viewer_dsn: str
    resources: AdapterResources


def _dsn(admin: str, user: str, password: str, database: str) -> str:
    parts = urlsplit(admin)
    netloc = f"{user}:{password}@{parts.hostname}:{parts.port}"
    return urlunsplit((parts.scheme, netloc, f"/{database}", "", ""))


@pytest_asyncio.fixture(scope="module")
async def db(stack: Settings) -> AsyncIterator[TenantDb]:
    assert stack.postgres_admin_dsn
    tag = uuid.uuid4().hex[:8]
    name, owner, viewer, password = f"tenantdb_{tag}", f"owner_{tag}", f"viewer_{tag}", "pw-" + tag
    admin = await asyncpg.connect(stack.postgres_admin_dsn)
    try:
        await admin.execute(f"CREATE ROLE {owner} LOGIN PASSWORD '{password}'")
        await admin.execute(f"CREATE ROLE {viewer} LOGIN PASSWORD '{password}'")
        await admin.execute(f"CREATE DATABASE {name} OWNER {owner}")
        owner_dsn = _dsn(stack.postgres_admin_dsn, owner, password, name)
        viewer_dsn = _dsn(stack.postgres_admin_dsn, viewer, password, name)
        conn = await asyncpg.connect(owner_dsn)
        try:
            await conn.execute(_SCHEMA)
            await conn.execute(f"GRANT SELECT, INSERT ON customers TO {viewer}")
        finally:
            await conn.close()
        databases = SqlDatabases(
            {
                TENANT: {"main": SecretStr(owner_dsn), "viewer": SecretStr(viewer_dsn)},
                "byref": {"main": SecretStr("secret://byref/sql/main_dsn")},
            }
        )
        store = Secrets(
            [
                EnvSecretBackend(
                    {
                        "STEAD_SECRET__BYREF__SQL__MAIN_DSN": owner_dsn,
                        "STEAD_SECRET__BYREF__SQL__REPORTS": owner_dsn,
                    }
                )
            ]
        )
        try:
            yield TenantDb(owner_dsn, viewer_dsn, AdapterResources(sql=databases, secrets=store))
        finally:
            await databases.aclose()
    finally:
        await admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        await admin.execute(f"DROP ROLE IF EXISTS {owner}")
        await admin.execute(f"DROP ROLE IF EXISTS {viewer}")
        await admin.close()


def _ctx(db: TenantDb, tenant: str = TENANT) -> OperationContext:
    wf = f"wf-{uuid.uuid4().hex[:8]}"
    return OperationContext(
        tenant=tenant,
        principal="user:ada",
        workflow_id=wf,
        step_id="sql",
        idempotency_key=f"{wf}/sql",
        resources=db.resources,
    )


async def _query(ctx: OperationContext, sql: str, *params: Any, **args: Any) -> Any:
    return await QUERY.run(
        ctx, CATALOG.parse_args("sql.query", {"sql": sql, "params": list(params), **args})
    )


async def _execute(ctx: OperationContext, sql: str, *params: Any, **args: Any) -> Any:
    return await EXECUTE.run(
        ctx, CATALOG.parse_args("sql.execute", {"sql": sql, "params": list(params), **args})
    )


async def _count(db: TenantDb, where: str = "true") -> int:
    conn = await asyncpg.connect(db.owner_dsn)
    try:
        return int(await conn.fetchval(f"SELECT count(*) FROM customers WHERE {where}"))
    finally:
        await conn.close()


async def test_a_query_binds_parameters_and_returns_json_rows(db: TenantDb) -> None:
    result = await _query(
        _ctx(db),
        "SELECT id, name, balance, created, tags, meta, uid, raw FROM customers WHERE name = $1",
        "Ada",
    )
    assert result.columns == ["id", "name", "balance", "created", "tags", "meta", "uid", "raw"]
    assert result.rows == [
        {
            "id": 1,
            "name": "Ada",
            "balance": "12.50",
            "created": "2026-01-02T03:04:05+00:00",
            "tags": ["vip"],
            "meta": {"tier": 1},
            "uid": "00000000-0000-0000-0000-000000000001",
            "raw": "AQI=",
        }
    ]
    assert (result.row_count, result.truncated) == (1, False)


async def test_a_parameter_is_data_never_sql(db: TenantDb) -> None:
    result = await _query(
        _ctx(db), "SELECT id FROM customers WHERE name = $1", "x'; DROP TABLE customers; --"
    )
    assert result.rows == []
    assert await _count(db) >= 3


@pytest.mark.parametrize(
    "sql",
    [
        "INSERT INTO customers (name) VALUES ('Eve')",
        "WITH gone AS (DELETE FROM customers RETURNING id) SELECT count(*) FROM gone",
        "SELECT nextval('invoice_numbers')",
        "CREATE TABLE planted (x int)",
    ],
)
async def test_sql_query_cannot_write(db: TenantDb, sql: str) -> None:
    before = await _count(db)
    with pytest.raises(AdapterError) as caught:
        await _query(_ctx(db), sql)
    assert caught.value.details["reason"] == "read_only"
    assert not caught.value.retryable and "use sql.execute" in caught.value.message
    assert await _count(db) == before


async def test_sql_query_cannot_switch_its_transaction_to_read_write(db: TenantDb) -> None:
    with pytest.raises(AdapterError) as caught:
        await _query(_ctx(db), "SET TRANSACTION READ WRITE")
    assert not caught.value.retryable
    assert "read-write mode must be set before any query" in caught.value.message


async def test_only_one_statement_runs(db: TenantDb) -> None:
    with pytest.raises(AdapterError) as caught:
        await _query(_ctx(db), "SELECT 1; DROP TABLE customers")
    assert "multiple commands" in caught.value.message
    assert await _count(db) >= 3


async def test_max_rows_cuts_the_result(db: TenantDb) -> None:
    result = await _query(_ctx(db), "SELECT name FROM customers ORDER BY id", max_rows=2)
    assert [r["name"] for r in result.rows] == ["Ada", "Bob"]
    assert (result.row_count, result.truncated) == (2, True)


async def test_a_slow_statement_is_cancelled_at_its_timeout(db: TenantDb) -> None:
    with pytest.raises(AdapterError) as caught:
        await _query(_ctx(db), "SELECT pg_sleep(5)", timeout_seconds=0.3)
    assert caught.value.details["reason"] == "statement_timeout"


async def test_a_mistyped_parameter_is_a_clear_non_retryable_error(db: TenantDb) -> None:
    with pytest.raises(AdapterError) as caught:
        await _query(_ctx(db), "SELECT name FROM customers WHERE id = $1", "one")
    assert not caught.value.retryable and "$1" in caught.value.message


async def test_execute_writes_once_per_idempotency_key(db: TenantDb) -> None:
    name = f"n-{uuid.uuid4().hex[:6]}"
    ctx = _ctx(db)
    insert = "INSERT INTO customers (name, balance) VALUES ($1, $2) RETURNING name, balance"
    first = await _execute(ctx, insert, name, 5)
    again = await _execute(ctx, insert, name, 5)
    assert (first.command, first.rows_affected, first.replayed) == ("INSERT", 1, False)
    assert first.rows == [{"name": name, "balance": "5.00"}]
    assert again == first.model_copy(update={"replayed": True})
    assert await _count(db, f"name = '{name}'") == 1
    await _execute(_ctx(db), insert, name, 5)  # another step: another effect
    assert await _count(db, f"name = '{name}'") == 2


async def test_reconcile_finds_only_a_committed_write(db: TenantDb) -> None:
    name = f"r-{uuid.uuid4().hex[:6]}"
    ctx = _ctx(db)
    args = CATALOG.parse_args(
        "sql.execute", {"sql": "UPDATE customers SET balance = 1 WHERE name = $1", "params": [name]}
    )
    assert EXECUTE.reconcile is not None
    assert await EXECUTE.reconcile(ctx, args) is None
    done = await EXECUTE.run(ctx, args)
    found = await EXECUTE.reconcile(ctx, args)
    assert found is not None and found.replayed and found.rows_affected == done.rows_affected == 0


async def test_a_key_reused_with_other_arguments_is_refused(db: TenantDb) -> None:
    ctx = _ctx(db)
    await _execute(ctx, "UPDATE customers SET balance = balance WHERE name = $1", "Bob")
    with pytest.raises(AdapterError) as caught:
        await _execute(ctx, "DELETE FROM customers WHERE name = $1", "Bob")
    assert caught.value.details["reason"] == "idempotency_key_reused"
    assert await _count(db, "name = 'Bob'") == 1


async def test_a_refused_statement_records_no_effect(db: TenantDb) -> None:
    ctx = _ctx(db)
    args = CATALOG.parse_args(
        "sql.execute", {"sql": "INSERT INTO customers (id, name) VALUES (1, 'dup')"}
    )
    with pytest.raises(AdapterError) as caught:
        await EXECUTE.run(ctx, args)
    assert caught.value.details["reason"] == "UniqueViolationError"
    assert not caught.value.retryable
    assert EXECUTE.reconcile is not None and await EXECUTE.reconcile(ctx, args) is None


async def test_a_database_the_tenant_has_not_configured_is_refused(db: TenantDb) -> None:
    with pytest.raises(AdapterError) as caught:
        await _query(_ctx(db, "globex"), "SELECT 1")
    assert not caught.value.retryable
    assert "secret://globex/sql/main" in caught.value.message


async def test_a_dsn_can_be_a_secret_reference(db: TenantDb) -> None:
    mapped = await _query(_ctx(db, "byref"), "SELECT count(*) AS n FROM customers")
    by_name = await _query(_ctx(db, "byref"), "SELECT 1 AS one", database="reports")
    assert mapped.rows[0]["n"] >= 3 and by_name.rows == [{"one": 1}]


async def test_a_role_without_the_effect_table_is_told_what_to_run(db: TenantDb) -> None:
    with pytest.raises(AdapterError) as caught:
        await _execute(
            _ctx(db), "INSERT INTO customers (name) VALUES ($1)", "viewer", database="viewer"
        )
    assert caught.value.details["reason"] == "no_effect_ledger"
    # CREATE TABLE ... if nobody made it yet, else GRANT ...: either way, what to run.
    assert "stead_sql_effects" in caught.value.message
    assert "have the owner run" in caught.value.message
    assert await _count(db, "name = 'viewer'") == 0


@pytest.mark.parametrize(
    ("args", "field"),
    [
        ({"sql": "SELECT $1", "params": [{"nested": 1}]}, "params.0"),
        ({"sql": "SELECT 1", "database": "../other"}, "database"),
        ({"sql": ""}, "sql"),
        ({"sql": "SELECT 1", "dsn": "postgresql://x"}, "dsn"),
        ({"sql": "SELECT 1", "max_rows": 0}, "max_rows"),
    ],
)
def test_bad_arguments_fail_the_schema(args: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidArguments) as caught:
        CATALOG.parse_args("sql.query", args)
    assert field in str(caught.value)
