"""The database as a boundary, tested as the attacker: SQL as the app role ``stead_app``
(the credentials every worker holds), and as the owner or a superuser where only
detection is possible.

What must hold: another tenant's directory rows stay invisible and unchanged whatever
tenant setting the attacker makes; decisions and audit rows cannot be rewritten; a
row written without the audit key, or a deleted tail, makes ``stead audit verify``
exit 1 and name it.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import os
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import pytest
import pytest_asyncio

from stead.audit import AuditEvent, append_event, installed, verify_chain
from stead.audit.chain import CHAIN_KEYED, CHAIN_UNKEYED, hashed_fields, unkeyed_hash
from stead.capability import CapabilityAuthority, CapabilityScope, NoAllowDecision
from stead.contracts.run import Decision, canonical_json
from stead.db.pool import create_pool, tenant_transaction
from stead.identity import directory
from stead.keys import CAPABILITY, KeyStore
from stead.runs.store import record_decision
from stead.settings import Settings
from tests.conftest import REPO, subprocess_env


@pytest_asyncio.fixture(scope="module")
async def pool(stack: Settings) -> AsyncIterator[asyncpg.Pool]:
    pool = await create_pool(stack.postgres_dsn, min_size=1, max_size=4)
    try:
        yield pool
    finally:
        await pool.close()


def new_tenant() -> str:
    return f"t{uuid.uuid4().hex[:8]}"


@dataclass(frozen=True)
class Outcome:
    code: int
    out: str
    err: str


async def stead(stack: Settings, *args: str, **env: str) -> Outcome:
    """The real CLI in a child process, pointed at the test stack."""
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "stead.cli",
        *args,
        env=subprocess_env(stack, **env),
        cwd=REPO,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(child.communicate(), timeout=60)
    assert child.returncode is not None
    return Outcome(child.returncode, out.decode(), err.decode())


async def app_connection(stack: Settings, tenant: str | None) -> asyncpg.Connection:
    """A bare connection as the app role; the attacker sets whatever tenant it likes."""
    conn = await asyncpg.connect(stack.postgres_dsn)
    await conn.execute("BEGIN")
    if tenant is not None:
        await conn.execute("SELECT set_config('app.tenant_id', $1, true)", tenant)
    return conn


async def refusal(conn: asyncpg.Connection, sql: str, *args: object) -> asyncpg.PostgresError:
    """Run ``sql`` in a savepoint of the attacker's transaction; it must be refused."""
    await conn.execute("SAVEPOINT attempt")
    try:
        status = await conn.execute(sql, *args)
    except asyncpg.PostgresError as exc:
        await conn.execute("ROLLBACK TO SAVEPOINT attempt")
        return exc
    raise AssertionError(f"{sql!r} was not refused: {status}")


async def as_admin(stack: Settings, sql: str, *args: object) -> list[asyncpg.Record]:
    assert stack.postgres_admin_dsn is not None
    admin = await asyncpg.connect(stack.postgres_admin_dsn)
    try:
        rows: list[asyncpg.Record] = await admin.fetch(sql, *args)
        return rows
    finally:
        await admin.close()


async def managed(pool: asyncpg.Pool, tenant: str, *principals: str) -> None:
    async with tenant_transaction(pool, tenant) as conn:
        await directory.create_tenant(conn, tenant, "Victim Inc")
        for principal in principals:
            await directory.add_principal(conn, tenant, principal)


async def directory_rows(stack: Settings, tenant: str) -> tuple[object, ...]:
    tenants = await as_admin(stack, "SELECT id, display_name FROM tenants WHERE id = $1", tenant)
    principals = await as_admin(
        stack,
        "SELECT id, disabled, tokens_not_before FROM principals WHERE tenant = $1 ORDER BY id",
        tenant,
    )
    return tuple(tuple(r) for r in tenants), tuple(tuple(r) for r in principals)


async def append_chain(pool: asyncpg.Pool, tenant: str, count: int) -> None:
    for n in range(count):
        async with tenant_transaction(pool, tenant) as conn:
            await append_event(
                conn, AuditEvent(tenant=tenant, kind="k", actor="user:a", data={"n": n})
            )


# ------------------------------------------------------------------ (a) tenants


@pytest.mark.parametrize("setting", ["own", "none"])
async def test_another_tenants_directory_rows_are_invisible_and_unchangeable(
    pool: asyncpg.Pool, stack: Settings, setting: str
) -> None:
    victim, attacker = new_tenant(), new_tenant()
    await managed(pool, victim, "user:vic", "user:val")
    await managed(pool, attacker, "user:eve")
    before = await directory_rows(stack, victim)

    conn = await app_connection(stack, attacker if setting == "own" else None)
    try:
        seen = await conn.fetch("SELECT id FROM tenants")
        assert {r["id"] for r in seen} == ({attacker} if setting == "own" else set())
        assert await conn.fetch("SELECT * FROM principals WHERE tenant = $1", victim) == []
        updated = await conn.execute(
            "UPDATE principals SET disabled = true WHERE tenant = $1", victim
        )
        assert updated == "UPDATE 0"
        for sql in (
            "DELETE FROM tenants WHERE id = $1",
            "UPDATE tenants SET display_name = 'pwned' WHERE id = $1",
            "DELETE FROM principals WHERE tenant = $1",
        ):
            refused = await refusal(conn, sql, victim)
            assert isinstance(refused, asyncpg.InsufficientPrivilegeError), refused
            assert "permission denied" in str(refused)
    finally:
        await conn.close()

    assert await directory_rows(stack, victim) == before


async def test_setting_the_victims_tenant_still_cannot_delete_it_or_revive_revoked_tokens(
    pool: asyncpg.Pool, stack: Settings
) -> None:
    # RLS trusts the tenant setting the app role makes itself; grants and triggers do not.
    victim = new_tenant()
    await managed(pool, victim, "user:vic")
    async with tenant_transaction(pool, victim) as conn:
        await directory.set_disabled(conn, victim, "user:vic", True)
    before = await directory_rows(stack, victim)

    conn = await app_connection(stack, victim)
    try:
        for sql in (
            "DELETE FROM tenants WHERE id = $1",
            "DELETE FROM principals WHERE tenant = $1",
        ):
            refused = await refusal(conn, sql, victim)
            assert isinstance(refused, asyncpg.InsufficientPrivilegeError), refused
            assert "permission denied" in str(refused)
        revived = await refusal(
            conn,
            "UPDATE principals SET tokens_not_before = NULL, disabled = false WHERE tenant = $1",
            victim,
        )
        assert "never moves back" in str(revived)
        renamed = await refusal(
            conn, "UPDATE principals SET id = 'user:eve' WHERE tenant = $1", victim
        )
        assert "never change" in str(renamed)
    finally:
        await conn.close()

    assert await directory_rows(stack, victim) == before


async def test_listing_tenants_yields_ids_only(pool: asyncpg.Pool, stack: Settings) -> None:
    victim = new_tenant()
    await managed(pool, victim)
    conn = await app_connection(stack, None)
    try:
        ids = [r[0] for r in await conn.fetch("SELECT stead_tenant_ids()")]
        # The function is the owner's; the app role cannot redefine it or read the table.
        replaced = await refusal(
            conn,
            "CREATE OR REPLACE FUNCTION stead_tenant_ids() RETURNS SETOF text"
            " LANGUAGE sql AS $$ SELECT 'x' $$",
        )
        assert isinstance(replaced, asyncpg.InsufficientPrivilegeError), replaced
        assert await conn.fetchval("SELECT count(*) FROM tenants") == 0
    finally:
        await conn.close()
    assert victim in ids
    assert all(isinstance(i, str) for i in ids)


# ------------------------------------------------- (b) append-only trust tables


async def seeded_decision(pool: asyncpg.Pool, tenant: str) -> str:
    decision_id = f"d-{uuid.uuid4().hex[:10]}"
    async with tenant_transaction(pool, tenant) as conn:
        await conn.execute(
            "INSERT INTO decisions (decision_id, tenant, workflow_id, step_id, kind, outcome,"
            " input_hash) VALUES ($1, $2, 'wf', 's', 'step', 'deny', 'h')",
            decision_id,
            tenant,
        )
    return decision_id


@pytest.mark.parametrize(
    "sql",
    [
        "UPDATE decisions SET outcome = 'allow' WHERE tenant = $1",
        "DELETE FROM decisions WHERE tenant = $1",
        "UPDATE audit_events SET actor = 'user:eve' WHERE tenant = $1",
        "DELETE FROM audit_events WHERE tenant = $1",
        "DELETE FROM effects WHERE tenant = $1",
        "DELETE FROM plans WHERE tenant = $1",
        "DELETE FROM runs WHERE tenant = $1",
    ],
)
async def test_app_role_cannot_rewrite_what_the_trust_chain_reads(
    pool: asyncpg.Pool, stack: Settings, sql: str
) -> None:
    tenant = new_tenant()
    decision_id = await seeded_decision(pool, tenant)
    await append_chain(pool, tenant, 2)
    with pytest.raises(asyncpg.InsufficientPrivilegeError, match="permission denied"):
        async with tenant_transaction(pool, tenant) as conn:
            await conn.execute(sql, tenant)
    for table in ("decisions", "audit_events"):
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="permission denied"):
            async with tenant_transaction(pool, tenant) as conn:
                await conn.execute(f"TRUNCATE {table}")
    [row] = await as_admin(
        stack, "SELECT outcome FROM decisions WHERE decision_id = $1", decision_id
    )
    assert row["outcome"] == "deny"


async def test_even_the_owner_cannot_turn_a_deny_into_an_allow(
    pool: asyncpg.Pool, stack: Settings
) -> None:
    tenant = new_tenant()
    decision_id = await seeded_decision(pool, tenant)
    with pytest.raises(asyncpg.InsufficientPrivilegeError, match="decisions is append-only"):
        await as_admin(
            stack, "UPDATE decisions SET outcome = 'allow' WHERE decision_id = $1", decision_id
        )


async def test_a_finished_effect_cannot_be_reopened(pool: asyncpg.Pool) -> None:
    # Turning `completed` back into `in_flight` would make the ledger run the effect again.
    tenant = new_tenant()
    async with tenant_transaction(pool, tenant) as conn:
        await conn.execute(
            "INSERT INTO effects (idempotency_key, tenant, workflow_id, step_id, operation,"
            " args_hash, status) VALUES ($1, $2, 'wf', 's', 'records.put', 'h', 'completed')",
            f"{tenant}/s",
            tenant,
        )
    for sql in (
        "UPDATE effects SET status = 'in_flight' WHERE tenant = $1",
        "UPDATE effects SET args_hash = 'other' WHERE tenant = $1",
    ):
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="never change"):
            async with tenant_transaction(pool, tenant) as conn:
                await conn.execute(sql, tenant)


async def test_only_expired_capability_uses_can_be_deleted(
    pool: asyncpg.Pool, stack: Settings
) -> None:
    tenant = new_tenant()
    now = datetime.now(UTC)
    async with tenant_transaction(pool, tenant) as conn:
        for token_id, expires in (
            ("live", now + timedelta(minutes=5)),
            ("old", now - timedelta(minutes=5)),
        ):
            await conn.execute(
                "INSERT INTO capability_uses (token_id, tenant, idempotency_key, workflow_id,"
                " run_id, step_id, operation, args_hash, decision_id, issued_at, expires_at)"
                " VALUES ($1, $2, 'k', 'wf', 'r', 's', 'records.put', 'h', 'd', $3, $4)",
                f"{tenant}-{token_id}",
                tenant,
                now - timedelta(minutes=10),
                expires,
            )
    async with tenant_transaction(pool, tenant) as conn:
        deleted = await conn.execute("DELETE FROM capability_uses WHERE tenant = $1", tenant)
    assert deleted == "DELETE 1"
    left = await as_admin(stack, "SELECT token_id FROM capability_uses WHERE tenant = $1", tenant)
    assert [r["token_id"] for r in left] == [f"{tenant}-live"]


async def test_a_forged_allow_decision_gets_no_capability(
    pool: asyncpg.Pool, stack: Settings, tmp_path: Path
) -> None:
    # INSERT on decisions stays (policy activities record them); a row the app role
    # writes itself carries no MAC under audit.secret, so the authority signs nothing.
    tenant = new_tenant()
    keys = KeyStore(tmp_path)
    keys.ensure(CAPABILITY)
    private = keys.private(CAPABILITY)
    assert private is not None
    authority = CapabilityAuthority(private, pool)
    workflow_id = f"wf-{uuid.uuid4().hex[:8]}"

    def scope(decision_id: str) -> CapabilityScope:
        return CapabilityScope(
            tenant=tenant,
            workflow_id=workflow_id,
            run_id="r",
            step_id="send",
            operation="records.put",
            args_hash="a" * 64,
            idempotency_key=f"{workflow_id}/send",
            decision_id=decision_id,
        )

    forged = f"d-{uuid.uuid4().hex[:10]}"
    for mac in (None, "0" * 64):
        async with tenant_transaction(pool, tenant) as conn:
            await conn.execute(
                "INSERT INTO decisions (decision_id, tenant, workflow_id, step_id, kind, outcome,"
                " input_hash, mac) VALUES ($1, $2, $3, 'send', 'step', 'allow', 'h', $4)",
                f"{forged}-{mac is None}",
                tenant,
                workflow_id,
                mac,
            )
        with pytest.raises(NoAllowDecision, match="carries no valid MAC"):
            await authority.issue(scope(f"{forged}-{mac is None}"))

    genuine = f"d-{uuid.uuid4().hex[:10]}"
    async with tenant_transaction(pool, tenant) as conn:
        await record_decision(
            conn,
            tenant=tenant,
            workflow_id=workflow_id,
            step_id="send",
            kind="step",
            decision=Decision(decision_id=genuine, outcome="allow", reasons=("ok",)),
            input_hash="h",
            eval_ms=None,
        )
    assert await authority.issue(scope(genuine))


# ------------------------------------------------------ (c) forged audit rows


async def chain_head(pool: asyncpg.Pool, tenant: str) -> tuple[int, str]:
    async with tenant_transaction(pool, tenant) as conn:
        row = await conn.fetchrow(
            "SELECT seq, hash FROM audit_events WHERE tenant = $1 ORDER BY seq DESC LIMIT 1", tenant
        )
    return int(row["seq"]), str(row["hash"])


async def insert_forged(
    pool: asyncpg.Pool, tenant: str, *, digest: str, version: int, seq: int, prev: str, at: datetime
) -> None:
    async with tenant_transaction(pool, tenant) as conn:
        await conn.execute(
            "INSERT INTO audit_events (tenant, seq, kind, actor, data, recorded_at, prev_hash,"
            " hash, chain_version) VALUES ($1, $2, 'approval', 'user:eve', $3::text::jsonb, $4,"
            " $5, $6, $7)",
            tenant,
            seq,
            canonical_json({"approved": True}),
            at,
            prev,
            digest,
            version,
        )


def forged_fields(tenant: str, seq: int, at: datetime) -> dict[str, object]:
    return hashed_fields(
        tenant=tenant,
        seq=seq,
        workflow_id=None,
        run_id=None,
        step_id=None,
        kind="approval",
        actor="user:eve",
        data={"approved": True},
        recorded_at=at,
    )


async def test_an_old_style_unkeyed_row_is_refused_at_insert(pool: asyncpg.Pool) -> None:
    tenant = new_tenant()
    await append_chain(pool, tenant, 3)
    seq, prev = await chain_head(pool, tenant)
    at = datetime.now(UTC)
    digest = unkeyed_hash(prev, forged_fields(tenant, seq + 1, at))
    with pytest.raises(asyncpg.CheckViolationError, match="audit_events_keyed"):
        await insert_forged(
            pool, tenant, digest=digest, version=CHAIN_UNKEYED, seq=seq + 1, prev=prev, at=at
        )


@pytest.mark.parametrize("forger", ["guessed-key", "unkeyed-sha256"])
async def test_a_row_forged_without_the_key_fails_verify_naming_it(
    pool: asyncpg.Pool, stack: Settings, forger: str
) -> None:
    tenant = new_tenant()
    await append_chain(pool, tenant, 3)
    seq, prev = await chain_head(pool, tenant)
    at = datetime.now(UTC)
    fields = forged_fields(tenant, seq + 1, at)
    if forger == "guessed-key":
        message = (prev + canonical_json(fields)).encode()
        digest = hmac.new(os.urandom(32), message, hashlib.sha256).hexdigest()
    else:
        digest = unkeyed_hash(prev, fields)
    await insert_forged(
        pool, tenant, digest=digest, version=CHAIN_KEYED, seq=seq + 1, prev=prev, at=at
    )

    result = await stead(stack, "audit", "verify", "--tenant", tenant)
    assert result.code == 1, result
    assert f"TAMPERED {tenant}: first bad row seq {seq + 1}:" in result.err, result
    assert "altered or forged" in result.err, result


async def test_verify_without_the_key_says_so_and_does_not_pass(
    pool: asyncpg.Pool, stack: Settings, tmp_path: Path
) -> None:
    tenant = new_tenant()
    await append_chain(pool, tenant, 2)
    result = await stead(stack, "audit", "verify", "--tenant", tenant, STEAD_KEYS_DIR=str(tmp_path))
    assert result.code == 1, result
    lines = [line for line in result.err.splitlines() if line.strip()]
    assert len(lines) == 1 and "no audit key at" in lines[0], result
    assert "intact" not in result.out


# --------------------------------------------------------- (d) a cut tail


async def delete_as_superuser(stack: Settings, tenant: str, after_seq: int) -> None:
    assert stack.postgres_admin_dsn is not None
    admin = await asyncpg.connect(stack.postgres_admin_dsn)
    try:
        async with admin.transaction():
            await admin.execute("ALTER TABLE audit_events DISABLE TRIGGER USER")
            await admin.execute(
                "DELETE FROM audit_events WHERE tenant = $1 AND seq > $2", tenant, after_seq
            )
            await admin.execute("ALTER TABLE audit_events ENABLE TRIGGER USER")
    finally:
        await admin.close()


async def test_deleting_the_newest_rows_is_caught(pool: asyncpg.Pool, stack: Settings) -> None:
    tenant = new_tenant()
    await append_chain(pool, tenant, 6)
    intact = await stead(stack, "audit", "verify", "--tenant", tenant)
    assert intact.code == 0, intact
    assert "chain intact" in intact.out and "anchored at seq 6" in intact.out, intact

    await delete_as_superuser(stack, tenant, after_seq=4)

    result = await stead(stack, "audit", "verify", "--tenant", tenant)
    assert result.code == 1, result
    assert "rows after seq 4 are missing" in result.err, result
    assert "anchor records seq 6" in result.err, result


async def test_deleting_a_whole_chain_is_caught_when_verifying_every_tenant(
    pool: asyncpg.Pool, stack: Settings
) -> None:
    tenant = new_tenant()
    await append_chain(pool, tenant, 3)
    await delete_as_superuser(stack, tenant, after_seq=0)

    result = await stead(stack, "audit", "verify", "--json")
    assert result.code == 1, result
    [ours] = [t for t in json.loads(result.out)["tenants"] if t["tenant"] == tenant]
    assert ours["ok"] is False and ours["first_bad_seq"] == 1
    assert "rows after seq 0 are missing" in ours["reason"]


async def test_an_anchor_rolled_back_by_hand_is_refused(
    pool: asyncpg.Pool, stack: Settings
) -> None:
    # The attacker copies a row's (seq, hash) from the database into the anchor file
    # to make a cut tail look whole: without the key it cannot sign the anchor.
    tenant = new_tenant()
    await append_chain(pool, tenant, 4)
    [row] = await as_admin(
        stack, "SELECT seq, hash FROM audit_events WHERE tenant = $1 AND seq = 2", tenant
    )
    forged = {"tenant": tenant, "seq": 2, "mac": row["hash"], "sig": "0" * 64}
    slot = json.dumps(forged).encode().ljust(255) + b"\n"
    installed().anchors.path(tenant).write_bytes(slot * 2)
    await delete_as_superuser(stack, tenant, after_seq=2)

    result = await stead(stack, "audit", "verify", "--tenant", tenant)
    assert result.code == 1, result
    assert "holds no anchor signed with the audit key" in result.err, result


async def test_a_torn_anchor_write_makes_the_anchor_lag_not_lie(pool: asyncpg.Pool) -> None:
    # A crash mid-write spoils the slot being written; the other slot still vouches
    # for the head before it, so an intact chain still verifies.
    tenant = new_tenant()
    await append_chain(pool, tenant, 4)
    path = installed().anchors.path(tenant)
    raw = bytearray(path.read_bytes())
    raw[10:40] = b"\x00" * 30  # slot 0 holds seq 4 (seq % 2 picks the slot)
    path.write_bytes(bytes(raw))

    async with tenant_transaction(pool, tenant) as conn:
        result = await verify_chain(conn, tenant)
    assert result.ok, result
    assert result.anchored_seq == 3


async def test_a_rolled_back_append_leaves_no_anchor_ahead_of_the_rows(
    pool: asyncpg.Pool,
) -> None:
    # The anchor moves after COMMIT only; otherwise a failed step would look like a cut.
    tenant = new_tenant()
    await append_chain(pool, tenant, 2)
    with pytest.raises(RuntimeError, match="step failed"):
        async with tenant_transaction(pool, tenant) as conn:
            await append_event(conn, AuditEvent(tenant=tenant, kind="k", actor="user:a"))
            raise RuntimeError("step failed")

    async with tenant_transaction(pool, tenant) as conn:
        result = await verify_chain(conn, tenant)
    assert result.ok, result
    assert (result.checked, result.anchored_seq) == (2, 2)


async def test_deleting_the_anchor_too_does_not_make_a_cut_chain_pass(
    pool: asyncpg.Pool, stack: Settings
) -> None:
    tenant = new_tenant()
    await append_chain(pool, tenant, 3)
    installed().anchors.path(tenant).unlink()
    await delete_as_superuser(stack, tenant, after_seq=1)

    result = await stead(stack, "audit", "verify", "--tenant", tenant)
    assert result.code == 1, result
    assert f"tenant {tenant} has no anchor" in result.err, result
